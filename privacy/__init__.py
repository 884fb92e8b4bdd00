"""Privacy accounting, budgets, the privacy policy file and `hearth-privacy`."""
