"""The feature cache: teacher features computed once per image view, keyed on file and build."""
