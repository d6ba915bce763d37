; Python imports. Captures: @import (the statement), @import.module, @import.name (repeatable),
; @import.alias. Matches on one statement with the same module and alias merge into one Import.

; import a.b / import a.b as c
(import_statement name: (dotted_name) @import.module) @import
(import_statement
  name: (aliased_import
    name: (dotted_name) @import.module
    alias: (identifier) @import.alias)) @import

; from m import a / from .m import a as b / from . import a / from m import *
(import_from_statement
  module_name: (_) @import.module
  name: (dotted_name) @import.name) @import
(import_from_statement
  module_name: (_) @import.module
  name: (aliased_import
    name: (dotted_name) @import.name
    alias: (identifier) @import.alias)) @import
(import_from_statement
  module_name: (_) @import.module
  (wildcard_import) @import.name) @import

(future_import_statement name: (dotted_name) @import.name (#set! import.module "__future__")) @import
