"""The employee's side of hearth: capture, consent, vault, local training, ClientApp."""
