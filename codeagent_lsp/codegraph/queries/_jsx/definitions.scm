; JSX adds no definitions. Not a language of its own.
