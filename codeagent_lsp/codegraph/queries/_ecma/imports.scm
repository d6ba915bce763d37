; Shared by javascript, typescript and tsx. Not a language of its own.

; import "m"
(import_statement source: (string) @import.module) @import

; import d from "m": the default export, named locally d.
(import_statement
  (import_clause (identifier) @import.alias)
  source: (string) @import.module
  (#set! import.name "default")) @import

; import * as ns from "m"
(import_statement
  (import_clause (namespace_import (identifier) @import.alias))
  source: (string) @import.module
  (#set! import.name "*")) @import

; import { a, b as c } from "m"
(import_statement
  (import_clause
    (named_imports (import_specifier name: (_) @import.name !alias)))
  source: (string) @import.module) @import

(import_statement
  (import_clause
    (named_imports (import_specifier name: (_) @import.name alias: (_) @import.alias)))
  source: (string) @import.module) @import

; Re-exports: export { a, b as c } from "m"; export * from "m"; export * as ns from "m"
(export_statement
  (export_clause (export_specifier name: (_) @import.name !alias))
  source: (string) @import.module) @import

(export_statement
  (export_clause (export_specifier name: (_) @import.name alias: (_) @import.alias))
  source: (string) @import.module) @import

(export_statement
  "*"
  source: (string) @import.module
  (#set! import.name "*")) @import

(export_statement
  (namespace_export (_) @import.alias)
  source: (string) @import.module
  (#set! import.name "*")) @import

; require("m"), const m = require("m"), const { a, b: c } = require("m"), import("m")
((call_expression
  function: (identifier) @_require
  arguments: (arguments . (string) @import.module .)) @import
  (#eq? @_require "require"))

((variable_declarator
  name: (identifier) @import.alias
  value: (call_expression
    function: (identifier) @_require
    arguments: (arguments . (string) @import.module .)) @import)
  (#eq? @_require "require"))

((variable_declarator
  name: (object_pattern (shorthand_property_identifier_pattern) @import.name)
  value: (call_expression
    function: (identifier) @_require
    arguments: (arguments . (string) @import.module .)) @import)
  (#eq? @_require "require"))

((variable_declarator
  name: (object_pattern
    (pair_pattern key: (property_identifier) @import.name value: (identifier) @import.alias))
  value: (call_expression
    function: (identifier) @_require
    arguments: (arguments . (string) @import.module .)) @import)
  (#eq? @_require "require"))

(call_expression
  function: (import)
  arguments: (arguments . (string) @import.module)) @import
