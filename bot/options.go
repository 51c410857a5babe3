package bot

import (
	"strconv"
	"strings"

	"kontextbot/kontext"
)

// Options are the settings a person can add to a prompt in text form.
type Options struct {
	Aspect string
	Seed   *int64
	Model  string
	// Image is a local file to edit (the console's --image): the first
	// of Images.
	Image string
	// Enhance asks the model to enhance the prompt first (--enhance).
	Enhance bool
	// Count is how many variations to make (--n 4); 0 when not given.
	Count int
	// Images are every --image given, in order: the file to edit, then
	// further references.
	Images []string
	// With are local files (the console's --with) an edit uses after its
	// base, whichever it is: "--with dog.png put this dog on the beach"
	// edits the current image using dog.png too.
	With []string
}

// ParseOptions splits "a red fox --ar 16:9 --seed 7 --model pro --n 4"
// into the prompt and its options. Options may stand anywhere; "--ar" also reads as
// "--aspect", and the model may be given as max, pro or its full name.
// "--enhance" takes no value ("--enhance=no" turns it off). Unknown "--"
// words are refused, so a typo never ends up in the prompt.
func ParseOptions(text string) (string, Options, error) {
	var o Options
	var words []string
	fields := strings.Fields(text)
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		name, value, hasValue := strings.Cut(f, "=")
		if !strings.HasPrefix(name, "--") || len(name) == 2 {
			words = append(words, f)
			continue
		}
		if strings.EqualFold(name, "--enhance") {
			switch strings.ToLower(value) {
			case "", "yes", "on", "true":
				o.Enhance = !hasValue || value != ""
			case "no", "off", "false":
				o.Enhance = false
			default:
				return "", o, Userf("--enhance takes no value (or =no to turn it off), not %q.", value)
			}
			continue
		}
		if !hasValue {
			if i+1 >= len(fields) {
				return "", o, Userf("%s needs a value, as in %s.", name, optionExample(name))
			}
			i++
			value = fields[i]
		}
		switch strings.ToLower(name) {
		case "--ar", "--aspect", "--aspect-ratio":
			if !kontext.ValidAspect(value) {
				return "", o, Userf("%q is not an aspect ratio I know: use one of %s.", value, strings.Join(kontext.AspectRatios[1:], ", "))
			}
			o.Aspect = value
		case "--seed":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return "", o, Userf("The seed must be a whole number of 0 or more, not %q.", value)
			}
			o.Seed = &n
		case "--model":
			m, ok := modelByName(value)
			if !ok {
				return "", o, Userf("Unknown model %q: use one of %s.", value, strings.Join(kontext.ModelNames(), ", "))
			}
			o.Model = m
		case "--image":
			if o.Image == "" {
				o.Image = value
			}
			o.Images = append(o.Images, value)
		case "--n", "--count":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > MaxVariations {
				return "", o, Userf("--n is how many variations to make: a whole number from 1 to %d, not %q.", MaxVariations, value)
			}
			o.Count = n
		case "--with":
			o.With = append(o.With, value)
		default:
			return "", o, Userf("Unknown option %s: use --ar, --seed, --model, --n or --enhance.", name)
		}
	}
	return strings.Join(words, " "), o, nil
}

func optionExample(name string) string {
	switch name {
	case "--seed":
		return "--seed 42"
	case "--model":
		return "--model pro"
	case "--image":
		return "--image photo.png"
	case "--n", "--count":
		return "--n 4"
	case "--with":
		return "--with dog.png"
	}
	return "--ar 16:9"
}

func modelByName(s string) (string, bool) {
	m, ok := kontext.LookupModel(s) // "max", "pro", a short name or an id; the served ones only
	return m.Name, ok
}
