; Java imports: `import java.util.List` gives module "java.util", name "List";
; `import java.util.*` the name "*". Static imports read the same.

(import_declaration
  (scoped_identifier scope: (_) @import.module name: (identifier) @import.name)) @import

(import_declaration
  [(scoped_identifier) (identifier)] @import.module
  (asterisk) @import.name) @import

(import_declaration (identifier) @import.module) @import
