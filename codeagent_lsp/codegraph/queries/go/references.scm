; Go references. Earlier patterns win when two match one node.

(call_expression function: (identifier) @reference.call)
(call_expression function: (selector_expression field: (field_identifier) @reference.call))

(qualified_type name: (type_identifier) @reference.type)
(type_identifier) @reference.type

(selector_expression field: (field_identifier) @reference.attribute)
