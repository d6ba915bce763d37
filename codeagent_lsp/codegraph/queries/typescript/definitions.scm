; TypeScript definitions: own patterns first, then the shared ones (first match wins).
; inherits: _ecma

(interface_declaration
  name: (type_identifier) @name
  body: (interface_body) @body) @definition.interface

(interface_body
  (method_signature name: (_) @name) @definition.method)

(interface_body
  (property_signature name: (_) @name) @definition.field)

(abstract_class_declaration
  name: (type_identifier) @name
  body: (class_body) @body) @definition.class

(class_body
  (abstract_method_signature name: (_) @name) @definition.method)

(class_body
  (method_signature name: (_) @name) @definition.method)

(class_body
  (public_field_definition name: (_) @name) @definition.field)

(type_alias_declaration name: (type_identifier) @name) @definition.type

(enum_declaration
  name: (identifier) @name
  body: (enum_body) @body) @definition.enum

(enum_body name: (property_identifier) @name @definition.constant)
(enum_body (enum_assignment name: (property_identifier) @name) @definition.constant)

; `declare function f(): void;` and overloads.
(function_signature name: (identifier) @name) @definition.function

; namespace N {...} / module M {...} / declare module "m" {...}
(internal_module
  name: (_) @name
  body: (statement_block) @body) @definition.namespace

(module
  name: (_) @name
  body: (statement_block) @body) @definition.module
