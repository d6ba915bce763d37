; C++ definitions: own patterns first, then C's (first match wins for a name).
; Out-of-line methods (`double Circle::area() const {...}`) name their class in @receiver.
; inherits: c

; Methods defined or declared in a class body (constructors and destructors included).
(field_declaration_list
  (function_definition
    declarator: [
      (function_declarator
        declarator: [(field_identifier) (identifier) (destructor_name) (operator_name)] @name)
      (pointer_declarator
        declarator: (function_declarator declarator: [(field_identifier) (operator_name)] @name))
      (reference_declarator
        (function_declarator declarator: [(field_identifier) (operator_name)] @name))
    ]
    body: (_)? @body) @definition.method)

(field_declaration_list
  (template_declaration
    (function_definition
      declarator: (function_declarator
        declarator: [(field_identifier) (identifier) (operator_name)] @name)
      body: (_)? @body) @definition.method))

(field_declaration_list
  (field_declaration
    declarator: [
      (function_declarator declarator: [(field_identifier) (operator_name)] @name)
      (pointer_declarator
        declarator: (function_declarator declarator: [(field_identifier) (operator_name)] @name))
      (reference_declarator
        (function_declarator declarator: [(field_identifier) (operator_name)] @name))
    ]) @definition.method)

(field_declaration_list
  (declaration
    declarator: (function_declarator
      declarator: [(identifier) (destructor_name) (operator_name)] @name)) @definition.method)

; Out of line: Circle::area, geo::Circle::area.
(function_definition
  declarator: [
    (function_declarator
      declarator: (qualified_identifier
        scope: (_) @receiver
        name: [(identifier) (destructor_name) (operator_name)] @name))
    (pointer_declarator
      declarator: (function_declarator
        declarator: (qualified_identifier
          scope: (_) @receiver
          name: [(identifier) (operator_name)] @name)))
    (reference_declarator
      (function_declarator
        declarator: (qualified_identifier
          scope: (_) @receiver
          name: [(identifier) (operator_name)] @name)))
  ]
  body: (_) @body) @definition.method

(function_definition
  declarator: (function_declarator
    declarator: (qualified_identifier
      scope: (_) @receiver
      name: (qualified_identifier
        scope: (_) @receiver
        name: [(identifier) (destructor_name) (operator_name)] @name)))
  body: (_) @body) @definition.method

(class_specifier
  name: [(type_identifier) @name (template_type name: (type_identifier) @name)]
  body: (field_declaration_list) @body) @definition.class

(struct_specifier
  name: (template_type name: (type_identifier) @name)
  body: (field_declaration_list) @body) @definition.struct

(namespace_definition
  name: (_) @name
  body: (declaration_list) @body) @definition.namespace

(alias_declaration name: (type_identifier) @name) @definition.type

(concept_definition name: (identifier) @name) @definition.type
