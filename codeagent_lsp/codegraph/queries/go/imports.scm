; Go imports: one Import per spec; a name (`geo`, `_`, `.`) is the alias.

(import_spec path: (_) @import.module) @import
(import_spec name: (_) @import.alias path: (_) @import.module) @import
