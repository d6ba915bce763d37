; Rust references. Earlier patterns win when two match one node.

(call_expression function: (identifier) @reference.call)
(call_expression function: (field_expression field: (field_identifier) @reference.call))
(call_expression function: (scoped_identifier name: (identifier) @reference.call))
(call_expression
  function: (generic_function
    function: [
      (identifier) @reference.call
      (scoped_identifier name: (identifier) @reference.call)
      (field_expression field: (field_identifier) @reference.call)
    ]))

(macro_invocation macro: (identifier) @reference.call)
(macro_invocation macro: (scoped_identifier name: (identifier) @reference.call))

; `Circle::new`: the type in an expression path, when capitalised like one.
((scoped_identifier path: (identifier) @reference.type)
  (#match? @reference.type "^[A-Z]"))

(scoped_type_identifier name: (type_identifier) @reference.type)
(type_identifier) @reference.type

(field_expression field: (field_identifier) @reference.attribute)
