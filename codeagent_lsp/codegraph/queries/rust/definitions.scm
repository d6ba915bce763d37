; Rust definitions. An impl is named after its type, so methods get the scope "Circle".
; Earlier patterns win when two match one name.

(impl_item
  body: (declaration_list
    (function_item
      name: (identifier) @name
      body: (block) @body) @definition.method))

(trait_item
  body: (declaration_list
    (function_item
      name: (identifier) @name
      body: (block) @body) @definition.method))

(trait_item
  body: (declaration_list
    (function_signature_item name: (identifier) @name) @definition.method))

(function_item
  name: (identifier) @name
  body: (block) @body) @definition.function

; Functions declared in `extern` blocks.
(function_signature_item name: (identifier) @name) @definition.function

(struct_item
  name: (type_identifier) @name
  body: (field_declaration_list) @body) @definition.struct

(struct_item name: (type_identifier) @name) @definition.struct

(union_item
  name: (type_identifier) @name
  body: (field_declaration_list) @body) @definition.struct

(enum_item
  name: (type_identifier) @name
  body: (enum_variant_list) @body) @definition.enum

(enum_variant_list (enum_variant name: (identifier) @name) @definition.constant)

(field_declaration_list (field_declaration name: (field_identifier) @name) @definition.field)

(trait_item
  name: (type_identifier) @name
  body: (declaration_list) @body) @definition.trait

(impl_item
  type: [
    (type_identifier) @name
    (generic_type type: (type_identifier) @name)
    (scoped_type_identifier name: (type_identifier) @name)
    (generic_type type: (scoped_type_identifier name: (type_identifier) @name))
  ]
  body: (declaration_list) @body) @definition.impl

(type_item name: (type_identifier) @name) @definition.type
(associated_type name: (type_identifier) @name) @definition.type

(const_item name: (identifier) @name) @definition.constant
(static_item (mutable_specifier) name: (identifier) @name) @definition.variable
(static_item name: (identifier) @name) @definition.constant

(mod_item
  name: (identifier) @name
  body: (declaration_list) @body) @definition.module

; `mod geometry;`: the module is the file geometry.rs.
(mod_item name: (identifier) @name) @definition.module

; The first rule stands in for a body: the signature is `macro_rules! square`.
(macro_definition name: (identifier) @name . (macro_rule) @body) @definition.macro
(macro_definition name: (identifier) @name) @definition.macro
