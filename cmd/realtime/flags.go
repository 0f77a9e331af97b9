package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// envFlags is a FlagSet whose every flag has a REALTIME_* environment twin:
// --admin-listen is REALTIME_ADMIN_LISTEN. A flag given on the command line
// wins over the environment, which wins over the default.
type envFlags struct {
	*flag.FlagSet
}

func newEnvFlags(name string) envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return envFlags{fs}
}

// envName returns the environment twin of a flag name.
func envName(flagName string) string {
	return "REALTIME_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse applies the environment, then args.
func (f envFlags) parse(args []string) error {
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		if v, ok := os.LookupEnv(envName(fl.Name)); ok && err == nil {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", envName(fl.Name), e)
			}
		}
	})
	if err != nil {
		return err
	}
	f.Usage = func() {
		example := ""
		f.VisitAll(func(fl *flag.Flag) {
			if example == "" {
				example = fmt.Sprintf(": --%s is %s", fl.Name, envName(fl.Name))
			}
		})
		fmt.Fprintf(f.Output(), "usage: realtime %s [flags]\n\nEvery flag has an environment twin%s.\n\n", f.Name(), example)
		f.PrintDefaults()
	}
	return f.Parse(args)
}
