; TypeScript imports: `import fs = require("fs")`, then the shared ones.
; inherits: _ecma

(import_statement
  (import_require_clause
    (identifier) @import.alias
    source: (string) @import.module)) @import
