"""The `mimo` command line: the top layer, above the model and data layer (pipeline/), the trainer
(trainer/) and the evaluation (eval/). Nothing below imports it."""
