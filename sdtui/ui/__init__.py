"""The Textual front end. Everything that imports textual lives under this package."""
