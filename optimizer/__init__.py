"""genedge.optimizer: the system model, the planners and their baselines, and the simulation."""
