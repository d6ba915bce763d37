; TypeScript references: own patterns first, then the shared ones.
; inherits: _ecma

(extends_clause value: (identifier) @reference.type)
(extends_clause value: (member_expression property: (property_identifier) @reference.type))
(nested_type_identifier name: (type_identifier) @reference.type)
(type_identifier) @reference.type
