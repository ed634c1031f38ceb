"""One module per task family; each defines `TASKS`, a tuple of `datasets.task.Task` records."""
