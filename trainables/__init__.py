"""torch side: datasets, models, training, unlearning methods and the Ray Tune trainable shell."""
