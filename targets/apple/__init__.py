"""Apple target (Core ML ``.mlpackage``): see README.txt."""
