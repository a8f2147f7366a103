//go:build race

package testenv

// raceEnabled makes BuildBinary build our daemons with -race too when the
// tests run under it, so e2e tests catch races in the real processes.
const raceEnabled = true
