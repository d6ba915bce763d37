; Rust use declarations: `use a::b::C` gives module "a::b", name "C". Groups give one Import
; per path; the several @import.module captures of a nested group join with "::".

(use_declaration
  argument: (scoped_identifier path: (_) @import.module name: (_) @import.name)) @import

(use_declaration argument: (identifier) @import.module) @import

(use_declaration
  argument: (use_as_clause
    path: (scoped_identifier path: (_) @import.module name: (_) @import.name)
    alias: (_) @import.alias)) @import

(use_declaration
  argument: (use_as_clause path: (identifier) @import.module alias: (_) @import.alias)) @import

(use_declaration
  argument: (use_wildcard (_) @import.module)
  (#set! import.name "*")) @import

; use a::{b, self, c as d, e::f, *}
(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list [(identifier) (self) (crate) (super)] @import.name))) @import

(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list
      (use_as_clause path: (identifier) @import.name alias: (_) @import.alias)))) @import

(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list
      (scoped_identifier path: (_) @import.module name: (_) @import.name)))) @import

(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list (use_wildcard) @_wildcard))
  (#set! import.name "*")) @import

; One level deeper: use a::{b::{c, d as e}}
(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list
      (scoped_use_list
        path: (_) @import.module
        list: (use_list [(identifier) (self)] @import.name))))) @import

(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list
      (scoped_use_list
        path: (_) @import.module
        list: (use_list
          (use_as_clause path: (identifier) @import.name alias: (_) @import.alias)))))) @import

(extern_crate_declaration name: (identifier) @import.module) @import
