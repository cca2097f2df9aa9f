"""The statistics of evaluation: CIs over tasks and classes, paired differences, gap closed."""
