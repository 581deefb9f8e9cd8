"""Built-in runtime plugins of nnport, one module per runtime. Each imports its SDK lazily."""
