"""Developer tooling: the independent reference of the domain rules, the storm."""
