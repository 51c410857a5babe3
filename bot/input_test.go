package bot_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantPrompt string
		wantAspect string
		wantSeed   int64 // -1: none
		wantModel  string
		wantErr    bool
	}{
		{name: "PromptOnly", in: "a red fox", wantPrompt: "a red fox", wantSeed: -1},
		{name: "AllOptions", in: "a red fox --ar 16:9 --seed 42 --model pro", wantPrompt: "a red fox", wantAspect: "16:9", wantSeed: 42, wantModel: kontext.ModelPro},
		{name: "OptionsFirstWithEquals", in: "--aspect=9:16 --model=max a tall tower", wantPrompt: "a tall tower", wantAspect: "9:16", wantSeed: -1, wantModel: kontext.ModelMax},
		{name: "DashesInPrompt", in: "a sign saying -- open -- now", wantPrompt: "a sign saying -- open -- now", wantSeed: -1},
		{name: "BadAspect", in: "x --ar 5:1", wantErr: true},
		{name: "BadSeed", in: "x --seed lots", wantErr: true},
		{name: "NegativeSeed", in: "x --seed -3", wantErr: true},
		{name: "BadModel", in: "x --model dev", wantErr: true},
		{name: "MissingValue", in: "x --seed", wantErr: true},
		{name: "UnknownOption", in: "x --stylize 100", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prompt, o, err := bot.ParseOptions(tt.in)
			if tt.wantErr {
				var ue *bot.UserError
				if !errors.As(err, &ue) {
					t.Fatalf("got %v, want a *UserError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if prompt != tt.wantPrompt || o.Aspect != tt.wantAspect || o.Model != tt.wantModel {
				t.Errorf("got %q %q %q, want %q %q %q", prompt, o.Aspect, o.Model, tt.wantPrompt, tt.wantAspect, tt.wantModel)
			}
			if (o.Seed == nil) != (tt.wantSeed < 0) || o.Seed != nil && *o.Seed != tt.wantSeed {
				t.Errorf("seed: got %v, want %d", o.Seed, tt.wantSeed)
			}
		})
	}
}

func TestCleanPrompt(t *testing.T) {
	const (
		england = "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F" // 🏴󠁧󠁢󠁥󠁮󠁧󠁿
		family  = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"             // 👨‍👩‍👧‍👦
		rainbow = "\U0001F3F3\ufe0f\u200d\U0001F308"                                       // 🏳️‍🌈
	)
	tests := []struct {
		name, in, want string
		err            error
	}{
		{"Plain", "a red fox", "a red fox", nil},
		// Real writing, kept byte for byte.
		{"PersianZWNJ", "می\u200cخواهم یک روباه قرمز", "می\u200cخواهم یک روباه قرمز", nil},
		{"EnglandFlag", "a flag " + england + " on a castle", "a flag " + england + " on a castle", nil},
		{"ScotlandAndWales", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F \U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F \U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F", nil},
		{"DevanagariZWJAndZWNJ", "क्\u200dष और क्\u200cष, हिन्दी में", "क्\u200dष और क्\u200cष, हिन्दी में", nil},
		{"EmojiSkinTonesAndFamilies", "👋🏽 " + family + " " + rainbow + " 🧑🏿\u200d🚀", "👋🏽 " + family + " " + rainbow + " 🧑🏿\u200d🚀", nil},
		{"ArabicWithRLM", "السعر\u200f 100$ \u061cمرحبا \u200eok", "السعر\u200f 100$ \u061cمرحبا \u200eok", nil},
		{"Japanese", "富士山の夕焼け、浮世絵風に。", "富士山の夕焼け、浮世絵風に。", nil},
		{"VariationSelectors", "☺\ufe0e ☺\ufe0f 葛\U000E0100城", "☺\ufe0e ☺\ufe0f 葛\U000E0100城", nil},
		{"BalancedIsolate", "title: \u2067مرحبا\u2069 in gold", "title: \u2067مرحبا\u2069 in gold", nil},
		{"BalancedEmbeddingAndOverride", "\u202bשלום\u202c and \u202dabc\u202c", "\u202bשלום\u202c and \u202dabc\u202c", nil},
		{"EmbeddingClosedByPDI", "\u2068x \u202by\u2069 z", "\u2068x \u202by\u2069 z", nil},
		// Invisible characters with no place in a prompt.
		{"UnclosedOverride", "a \u202eevil fox", "a evil fox", nil},
		{"StrayPops", "a\u202c fox\u2069", "a fox", nil},
		{"PDFCannotCloseAcrossIsolate", "\u202a\u2066x\u202c\u2069", "\u2066x\u2069", nil},
		{"HiddenTagText", "a cat\U000E0069\U000E0067\U000E006E\U000E006F\U000E0072\U000E0065\U000E007F", "a cat", nil},
		{"TagsWithoutCancel", "\U0001F3F4\U000E0067\U000E0062 x", "\U0001F3F4 x", nil},
		{"UppercaseTags", "\U0001F3F4\U000E0047\U000E0042\U000E007F x", "\U0001F3F4 x", nil},
		{"ZeroWidthSpaceAndBOM", "\ufeffa\u200b red\u2060 fox\u200b", "a red fox", nil},
		// Controls.
		{"ControlCharacters", "a\x00 red\x07 fox\u200b", "a red fox", nil},
		{"TerminalEscape", "\x1b[Aa red fox\x1b[2J", "[Aa red fox[2J", nil},
		{"BellAndDelete", "a\a red\x7f fox", "a red fox", nil},
		{"C1Controls", "a\u0080\u0090\u009b31m red\u009f fox", "a31m red fox", nil},
		{"LineBreaksBecomeSpaces", "  a red\nfox\t ", "a red fox", nil},
		{"CRLFIsOneSpace", "a red\r\nfox\rin\u2028snow\u0085now", "a red fox in snow now", nil},
		{"InvalidUTF8", "a \xff fox", "a  fox", nil},
		{"Empty", " \x00\n ", "", bot.ErrEmptyPrompt},
		{"OnlyInvisible", "\u200b\u202e\x1b", "", bot.ErrEmptyPrompt},
		{"Longest", strings.Repeat("é", bot.MaxPromptRunes), strings.Repeat("é", bot.MaxPromptRunes), nil},
		{"TooLong", strings.Repeat("é", bot.MaxPromptRunes+1), "", bot.ErrPromptTooLong},
		{"LongestAfterCleaning", strings.Repeat("a\x07", bot.MaxPromptRunes), strings.Repeat("a", bot.MaxPromptRunes), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bot.CleanPrompt(tt.in)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("got %+q %v, want %+q %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestOrdinal(t *testing.T) {
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 102: "102nd", 111: "111th"} {
		if got := bot.Ordinal(n); got != want {
			t.Errorf("Ordinal(%d): got %q, want %q", n, got, want)
		}
	}
}

func TestExplain(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"UserError", bot.ErrNoImage, "Reply to an image"},
		{"WrappedUserError", fmt.Errorf("deep: %w", bot.ErrEmptyPrompt), "prompt is empty"},
		{"Moderation", &kontext.APIError{Op: "poll", Kind: kontext.ErrContentRefused}, "refused this prompt"},
		{"Unauthorized", &kontext.APIError{Op: "create", Kind: kontext.ErrUnauthorized}, "API key"},
		{"Credits", &kontext.APIError{Op: "create", Kind: kontext.ErrOutOfCredits}, "out of credits"},
		{"Invalid", &kontext.APIError{Op: "create", Kind: kontext.ErrInvalidRequest, Message: "input_image is too small"}, "input_image is too small"},
		{"RateLimited", &kontext.APIError{Op: "create", Kind: kontext.ErrRateLimited}, "busy"},
		{"Timeout", &kontext.APIError{Op: "poll", Kind: kontext.ErrTimeout}, "too long"},
		{"UserWaiting", &kontext.LimitError{Kind: kontext.ErrUserWaitingLimit, Limit: 5}, "5 images waiting"},
		{"QueueFull", &kontext.LimitError{Kind: kontext.ErrQueueFull, Limit: 200}, "queue is full"},
		{"Shutdown", kontext.ErrShutdown, "restarting"},
		{"Unknown", errors.New("disk on fire"), bot.Apology},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bot.Explain(tt.err)
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
			if strings.Contains(got, "disk on fire") || strings.Contains(got, "kontext:") {
				t.Errorf("internal details leaked to the user: %q", got)
			}
		})
	}
}

// TestParseOptionsImages: --image and --with may repeat; their paths come
// out in order, the first --image also as Image.
func TestParseOptionsImages(t *testing.T) {
	tests := []struct {
		name, in             string
		wantImage            string
		wantImages, wantWith []string
	}{
		{"None", "a fox", "", nil, nil},
		{"OneImage", "--image a.png make it winter", "a.png", []string{"a.png"}, nil},
		{"TwoImages", "--image a.png put the hat --image=b.png on it", "a.png", []string{"a.png", "b.png"}, nil},
		{"With", "--with dog.png put this dog on the beach --with ball.png", "", nil, []string{"dog.png", "ball.png"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, o, err := bot.ParseOptions(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if o.Image != tt.wantImage || !slices.Equal(o.Images, tt.wantImages) || !slices.Equal(o.With, tt.wantWith) {
				t.Errorf("got %q %v %v, want %q %v %v", o.Image, o.Images, o.With, tt.wantImage, tt.wantImages, tt.wantWith)
			}
		})
	}
}
