; Shared by javascript, typescript and tsx. Not a language of its own.

((call_expression function: (identifier) @reference.call)
  (#not-eq? @reference.call "require"))

(call_expression
  function: (member_expression property: (property_identifier) @reference.call))

(new_expression constructor: (identifier) @reference.call)

(new_expression
  constructor: (member_expression property: (property_identifier) @reference.call))

(member_expression property: (property_identifier) @reference.attribute)
