; JavaScript references.
; inherits: _ecma, _jsx

(class_heritage (identifier) @reference.type)
(class_heritage (member_expression property: (property_identifier) @reference.type))
