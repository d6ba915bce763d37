; Java definitions. Constructors are methods. Earlier patterns win when two match one name.

(class_declaration
  name: (identifier) @name
  body: (class_body) @body) @definition.class

(record_declaration
  name: (identifier) @name
  body: (class_body) @body) @definition.class

(interface_declaration
  name: (identifier) @name
  body: (interface_body) @body) @definition.interface

(annotation_type_declaration
  name: (identifier) @name
  body: (annotation_type_body) @body) @definition.interface

(enum_declaration
  name: (identifier) @name
  body: (enum_body) @body) @definition.enum

(enum_body (enum_constant name: (identifier) @name) @definition.constant)

(method_declaration
  name: (identifier) @name
  body: (block) @body) @definition.method

; Abstract and interface methods.
(method_declaration name: (identifier) @name) @definition.method

(constructor_declaration
  name: (identifier) @name
  body: (constructor_body) @body) @definition.method

(annotation_type_element_declaration name: (identifier) @name) @definition.method

(field_declaration
  (modifiers "static" "final")
  declarator: (variable_declarator name: (identifier) @name)) @definition.constant

(field_declaration
  declarator: (variable_declarator name: (identifier) @name)) @definition.field

; Interface fields are constants.
(constant_declaration
  declarator: (variable_declarator name: (identifier) @name)) @definition.constant
