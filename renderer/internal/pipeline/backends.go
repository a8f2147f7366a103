package pipeline

import "regexp"

// serverLine matches a backend server line in nginx (server ADDR ...;
// inside upstream) and HAProxy (server NAME ADDR ...), but not an nginx
// "server {" block.
var serverLine = regexp.MustCompile(`(?m)^[ \t]*server[ \t]+[^{\s;#][^\n]*$`)

// CountServers counts backend server lines: the stale guard's measure for
// the shipped nginx and HAProxy templates and any template in their style.
func CountServers(b []byte) int {
	return len(serverLine.FindAllIndex(b, -1))
}
