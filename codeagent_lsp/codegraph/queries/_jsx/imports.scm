; JSX adds no imports. Not a language of its own.
