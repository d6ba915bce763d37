; C++ references: own patterns first, then C's.
; inherits: c

(call_expression
  function: (qualified_identifier name: (identifier) @reference.call))
(call_expression
  function: (qualified_identifier
    name: (qualified_identifier name: (identifier) @reference.call)))
(call_expression function: (template_function name: (identifier) @reference.call))
(call_expression
  function: (qualified_identifier
    name: (template_function name: (identifier) @reference.call)))
(call_expression
  function: (field_expression
    field: (template_method name: (field_identifier) @reference.call)))

(new_expression type: (type_identifier) @reference.call)
(new_expression type: (qualified_identifier name: (type_identifier) @reference.call))
