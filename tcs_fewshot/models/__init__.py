"""Networks: teachers, students, their offline weights, augmented views and raw pixels."""
