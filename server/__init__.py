"""The ML team's side: ServerApp, checkpoints, cohort rules, `hearth-server`."""
