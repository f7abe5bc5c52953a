"""The command line: configs, overrides, ``metalearn run`` and ``metalearn list``."""
