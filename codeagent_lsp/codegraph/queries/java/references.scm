; Java references. Earlier patterns win when two match one node.

(method_invocation name: (identifier) @reference.call)

(object_creation_expression type: (type_identifier) @reference.call)
(object_creation_expression type: (generic_type (type_identifier) @reference.call))

; `Math.max(...)`, `Circle.UNIT`: a class named in an expression, capitalised like one.
((method_invocation object: (identifier) @reference.type)
  (#match? @reference.type "^[A-Z]"))
((field_access object: (identifier) @reference.type)
  (#match? @reference.type "^[A-Z]"))

(type_identifier) @reference.type

(field_access field: (identifier) @reference.attribute)
