"""Teachers, students and features."""
