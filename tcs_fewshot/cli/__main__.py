from tcs_fewshot.cli import entry_point

entry_point()
