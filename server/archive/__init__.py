"""The archive: copies of result files, kept before their URLs expire."""
