"""Plumbing every command shares: the one-line user error (``errors``) and output paths that are
checked up front and written atomically (``output_files``)."""
