; Go definitions. Methods name their receiver's type in @receiver (their scope).
; A lone spec takes its declaration (`type Circle struct`, `const Pi = 3.14`), a spec of a
; group only itself. Earlier patterns win when two match one name.

(function_declaration
  name: (identifier) @name
  body: (block) @body) @definition.function

(function_declaration name: (identifier) @name) @definition.function

(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [
        (type_identifier) @receiver
        (pointer_type (type_identifier) @receiver)
        (generic_type type: (type_identifier) @receiver)
        (pointer_type (generic_type type: (type_identifier) @receiver))
      ]))
  name: (field_identifier) @name
  body: (block)? @body) @definition.method

; Structs and interfaces. An interface has no body node: its first member stands in, so the
; signature stops at `interface {`.
(type_declaration
  .
  (type_spec
    name: (type_identifier) @name
    type: (struct_type (field_declaration_list) @body))
  .) @definition.struct

(type_spec
  name: (type_identifier) @name
  type: (struct_type (field_declaration_list) @body)) @definition.struct

(type_declaration
  .
  (type_spec
    name: (type_identifier) @name
    type: (interface_type . (_) @body))
  .) @definition.interface

(type_spec
  name: (type_identifier) @name
  type: (interface_type . (_) @body)) @definition.interface

(type_declaration
  .
  (type_spec name: (type_identifier) @name type: (interface_type))
  .) @definition.interface

(type_spec name: (type_identifier) @name type: (interface_type)) @definition.interface

; Other named types and aliases.
(type_declaration . [(type_spec name: (type_identifier) @name) (type_alias name: (type_identifier) @name)] .) @definition.type
(type_spec name: (type_identifier) @name) @definition.type
(type_alias name: (type_identifier) @name) @definition.type

(interface_type (method_elem name: (field_identifier) @name) @definition.method)

(field_declaration_list
  (field_declaration name: (field_identifier) @name) @definition.field)

; Package-level constants and variables (the extractor drops those inside functions).
(const_declaration . (const_spec name: (identifier) @name) .) @definition.constant
(const_spec name: (identifier) @name) @definition.constant
(var_declaration . (var_spec name: (identifier) @name) .) @definition.variable
(var_spec name: (identifier) @name) @definition.variable
