from bloatguard.cli import entry

entry()
