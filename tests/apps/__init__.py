"""Small ferrosock apps the core tests run in a server subprocess."""
