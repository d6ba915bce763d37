; TSX is TypeScript with JSX elements.
; inherits: typescript
