# Loads the Vagrantfile with a stand-in for Vagrant's configuration API and prints, as JSON,
# what it configures: boxes, machines, networks, synced folders, providers, provisioners.
# Lets the tests check the Vagrantfile where Vagrant itself cannot run.
#
# Usage: ruby Scripts/k8s/vagrantfile_probe.rb path/to/Vagrantfile

require "json"

# Records every `x.y = value` and `x.y(args)` call, with nested blocks, as plain data.
class Recorder < BasicObject
  def initialize(data)
    @data = data
  end

  def method_missing(name, *args, **kwargs, &block)
    key = name.to_s
    if key.end_with?("=")
      @data[key.chomp("=")] = args.first
      return args.first
    end
    if block
      child = {}
      (@data["#{key}_blocks"] ||= []) << { "args" => args, "options" => kwargs, "config" => child }
      block.call(::Recorder.new(child))
      return nil
    end
    if args.empty? && kwargs.empty?
      return ::Recorder.new(@data[key] ||= {})
    end
    (@data["#{key}_calls"] ||= []) << { "args" => args, "options" => kwargs }
    nil
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  CONFIG = {}

  def self.configure(version)
    CONFIG["version"] = version
    yield Recorder.new(CONFIG)
  end
end

load ARGV.fetch(0)
puts JSON.pretty_generate(Vagrant::CONFIG)
