package nginxconf

// Node is a directive in its place in the config: its words (name first;
// a Lua block directive ends with its Lua token) and, for a block
// directive, the directives inside it.
type Node struct {
	Args     []Tok
	Block    bool
	Children []*Node
}

// Name is the directive's name.
func (n *Node) Name() string { return n.Args[0].Val }

// Vals are the directive's words, name first.
func (n *Node) Vals() []string {
	out := make([]string, len(n.Args))
	for i, a := range n.Args {
		out[i] = a.Val
	}
	return out
}

// Parse reads src into its top-level directives. A '}' with no block
// open is ignored and a block left open at the end keeps what it has:
// nginx rejects both, when it tests the file.
func Parse(src []byte) []*Node {
	root := &Node{Block: true}
	stack := []*Node{root}
	var cur []Tok
	add := func(n *Node) {
		top := stack[len(stack)-1]
		top.Children = append(top.Children, n)
	}
	for _, t := range Tokenize(src) {
		switch t.Kind {
		case Word:
			cur = append(cur, t)
		case Lua:
			add(&Node{Args: append(cur, t)})
			cur = nil
		case Semi:
			if len(cur) > 0 {
				add(&Node{Args: cur})
			}
			cur = nil
		case Open:
			n := &Node{Args: cur, Block: true}
			if len(cur) == 0 {
				n.Args = []Tok{{Kind: Word}} // "{" alone: nginx rejects it
			}
			add(n)
			stack = append(stack, n)
			cur = nil
		case Close:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			cur = nil
		}
	}
	return root.Children
}
