"""Reports over run directories: tables, figures, HTML, comparisons and leakage warnings."""
