; C references (C++ inherits them). Earlier patterns win when two match one node.

(call_expression function: (identifier) @reference.call)
(call_expression function: (field_expression field: (field_identifier) @reference.call))

(type_identifier) @reference.type

(field_expression field: (field_identifier) @reference.attribute)
