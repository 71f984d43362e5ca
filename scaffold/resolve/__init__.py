"""TARGET -> the class or builder function: reading the file (libcst), importing it lightly, naming."""
