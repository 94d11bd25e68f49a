"""The pure core: vocabulary, ids, merge and scheduling, with no I/O."""
