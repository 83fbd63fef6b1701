"""The training core shared by both models: model container, checkpoints, trainer, callbacks, schedules."""
