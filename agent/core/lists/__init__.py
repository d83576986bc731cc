"""The preload list: its schema and `file:line` errors, YAML read as hostile input, and the
pull secrets it names."""
