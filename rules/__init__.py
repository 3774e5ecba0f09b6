"""Built-in rules, one module per rule, installed as `bloatguard.rules`."""
