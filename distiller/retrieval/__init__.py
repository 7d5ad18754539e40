"""Retrieval: the student (dense or SPLADE, `models`), its index (`index`), hard-negative mining and
its false-negative judge (`mining`, `mining_judge`), training (`training`, `training_callback`) and
evaluation against the base model and BM25 (`evaluation`)."""
